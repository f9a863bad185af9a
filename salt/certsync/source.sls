{#- The NPM minion: publish the certificate for the consumers and make
    certbot keep the key across renewals (certsync.published), watch for
    renewals with the beacon, re-publish on a schedule as a safety net. #}
{%- from "certsync/map.jinja" import certsync with context %}
{%- set src = certsync.source %}
{#- Each route this minion is the source of: its hostname, kind and the
    kind's settings (certsync_source). One route (the single-certificate
    keys) is the beacon's and the engine's own settings; several are their
    `routes`. #}
{%- set published = salt["certsync_settings.routes"]().source %}
{%- set watched = {} %}
{%- for route, source in published | dictsort %}
{%-   do watched.update({route: dict(source.settings, hostname=source.hostname, kind=source.kind)}) %}
{%- endfor %}
{%- set single = watched.default if watched | list == ["default"] else none %}
{%- set kept = [] %}
{%- for route, source in published | dictsort if source.keep_key %}
{%-   do kept.append(route) %}
{%- endfor %}

include:
  - certsync.settings
  - certsync.rsync_retired
  - certsync.schedule
  - certsync.published

certsync-beacon:
  beacon.present:
    - name: certsync
    - save: true
    - interval: {{ src.beacon_interval }}
{%- if single %}
    - hostname: {{ single.hostname | json }}
    - kind: {{ single.kind | json }}
{%-   for key, value in single | dictsort if key not in ["hostname", "kind"] %}
    - {{ key }}: {{ value | json }}
{%-   endfor %}
{%- else %}
    - routes: {{ watched | json }}
{%- endif %}

{#- The certsync_watch engine: the beacon run the moment inotify sees the
    source change, instead of on its next poll, and the renewal published
    from there (for the consumers the pillar names at that moment) instead
    of by the master's runner. An engine starts with the minion: written
    into its configuration, then the minion restarted where it runs as the
    salt-minion service (elsewhere at its next start). #}
{%- set conf_dir = salt["file.dirname"](opts.conf_file) ~ "/" ~ salt["file.dirname"](opts.default_include) %}
{%- if src.watch is sameas true %}

certsync-watch:
  file.serialize:
    - name: {{ (conf_dir ~ "/certsync-watch.conf") | json }}
    - serializer: yaml
    - mode: '0600'
    - makedirs: true
    - dataset:
        engines:
          - certsync_watch:
{%- if single %}
              hostname: {{ single.hostname | json }}
              kind: {{ single.kind | json }}
{%-   for key, value in single | dictsort if key not in ["hostname", "kind"] %}
              {{ key }}: {{ value | json }}
{%-   endfor %}
              publish: true
              keep_key: {{ (kept == ["default"]) | json }}
{%- else %}
              routes: {{ watched | json }}
              publish: true
              keep_key: {{ kept | json }}
{%- endif %}

certsync-watch-started:
  cmd.run:
    - name: salt-call --local service.restart salt-minion
    - bg: true
    - onlyif: systemctl is-active --quiet salt-minion
    - onchanges:
      - file: certsync-watch

# elsewhere (no salt-minion systemd service): the operator restarts the minion
certsync-watch-restart-needed:
  test.show_notification:
    - text: >-
        The certsync_watch engine starts with the minion: restart this salt-minion
        for it to run ({{ conf_dir }}/certsync-watch.conf changed; this minion is not
        the salt-minion systemd service, so the formula cannot restart it).
    - unless: systemctl is-active --quiet salt-minion
    - onchanges:
      - file: certsync-watch
{%- elif src.watch is sameas false %}

certsync-watch:
  file.absent:
    - name: {{ (conf_dir ~ "/certsync-watch.conf") | json }}
{%- else %}

certsync-watch:
  test.fail_without_changes:
    - name: {{ ("certsync:source:watch must be true or false, not '" ~ (src.watch | string | truncate(40)) ~ "'") | json }}
{%- endif %}
