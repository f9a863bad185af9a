{#- Retire the deployment certsync replaces, on each role, where its parts
    exist: the source's mailcow-cert-push timer and service, the consumer's
    mailcow-cert-deploy timer and service (stopped and disabled with Salt's
    service states: both scripts write the same files as certsync, and its
    lock does not cover them), and on the consumer the forced-command
    `rsync --server ... <staging_dir>/` line of the `user`'s authorized_keys
    (every other line kept). The staging dir is left alone, and named.
    Off with certsync:rsync_retired:enabled: false. Included by both roles; a
    minion of both (the source of one route, a consumer of another) retires both. #}
{%- from "certsync/map.jinja" import certsync, roles with context %}

include:
  - certsync.settings
{%- set retired = certsync.rsync_retired %}
{#- a minion may be both: the source of one route, a consumer of another #}
{%- set units = [] %}
{%- for role in roles %}
{%-   do units.extend(retired.get(role ~ "_units", [])) %}
{%- endfor %}
{#- systemd's offline mode (systemctl, no systemd running) answers no unit query #}
{%- set offline = "service.offline" in salt and salt["service.offline"]() %}
{%- set found = namespace(any=false) %}
{%- if retired.enabled %}
{%-   for unit in units if not offline and salt["service.available"](unit) %}
{%-     set found.any = true %}

certsync-rsync-retired-{{ unit }}-stopped:
  service.dead:
    - name: {{ unit | json }}

certsync-rsync-retired-{{ unit }}-disabled:
  service.disabled:
    - name: {{ unit | json }}
{%-   endfor %}
{%-   if "consumer" in roles %}
{%-     set home = (salt["user.info"](retired.user) or {}).get("home") %}
{%-     set keys = retired.authorized_keys or (home ~ "/.ssh/authorized_keys" if home else "") %}
{%-     set forced = 'command="rsync --server [^"]* ' ~ (retired.staging_dir | regex_escape) ~ '/?"' %}
{%-     if keys and salt["file.file_exists"](keys) and salt["file.search"](keys, forced) %}
{%-       set found.any = true %}

# every forced-command line for the staging dir (one a key, whatever its rsync flags)
certsync-rsync-retired-forced-command:
  file.replace:
    - name: {{ keys | json }}
    - pattern: {{ ('^[^\n]*' ~ forced ~ '[^\n]*(\n|$)') | json }}
    - repl: ''
    - flags: [MULTILINE]
    - backup: false
{%-     endif %}
{%-     if salt["file.directory_exists"](retired.staging_dir) %}
{%-       set found.any = true %}

certsync-rsync-retired-staging-left:
  test.show_notification:
    - text: >-
        The old deployment's staging dir {{ retired.staging_dir }} is left as it is
        (it may hold a copy of the private key): remove it when you no longer need it.
{%-     endif %}
{%-   endif %}
{%- endif %}
{%- if not found.any %}

certsync-rsync-retired:
  test.show_notification:
    - text: >-
        {{ "nothing to retire: rsync_retired is off (certsync:rsync_retired:enabled)"
           if not retired.enabled else
           "nothing to retire: no unit, forced-command line or staging dir of the old "
           ~ "rsync deployment on this host" }}
{%- endif %}
