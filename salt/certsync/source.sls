{#- The NPM minion: publish the certificate for the consumers and make
    certbot keep the key across renewals (certsync.published), watch for
    renewals with the beacon, re-publish on a schedule as a safety net. #}
{%- from "certsync/map.jinja" import certsync with context %}
{%- set src = certsync.source %}
{#- The source's kind and its settings of that kind (certsync_source). #}
{%- set where = salt["certsync_settings.source"]() %}

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
    - hostname: {{ certsync.hostname | json }}
    - kind: {{ where.kind | json }}
{%- for key, value in where.settings | dictsort %}
    - {{ key }}: {{ value | json }}
{%- endfor %}

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
              hostname: {{ certsync.hostname | json }}
              kind: {{ where.kind | json }}
{%- for key, value in where.settings | dictsort %}
              {{ key }}: {{ value | json }}
{%- endfor %}
              publish: true
              keep_key: {{ salt["certsync_settings.reuse_key_wanted"]()["wanted"] | json }}

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
