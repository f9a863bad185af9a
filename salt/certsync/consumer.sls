{#- The mailcow minion: a recipient key for the sealed private key,
    SKIP_LETS_ENCRYPT=y and acme-mailcow recreated to honour it, dovecot
    told to keep its users' sessions through a reload (certsync.dovecot), the
    certificate from the source's mine entry deployed (certsync.deployed),
    alerts, and a schedule that re-converges when an event was lost. #}
{%- from "certsync/map.jinja" import certsync, consumer, routes with context %}
{#- The routes this consumer takes: source, kind and where the pair goes. #}
{#- A route its settings give no place (no dest) has no states: the settings
    check, the first state, names it and stops the run. #}
{%- set taken = salt["certsync_settings.routes"]().consumer %}
{%- set placed = [] %}
{%- for route in routes.consumer if taken[route].dest %}
{%-   do placed.append(route) %}
{%- endfor %}
{#- The routes whose pair goes in a directory certsync makes: a service's, and
    mailcow's per-name dir of a route other than its hostname's. #}
{%- set made = [] %}
{%- for route, where in taken | dictsort if where.dest %}
{%-   if where.kind != "mailcow" or where.dest.endswith("/" ~ (where.hostname | lower)) %}
{%-     do made.append(route) %}
{%-   endif %}
{%- endfor %}

include:
  - certsync.settings
  - certsync.rsync_retired
  - certsync.schedule
  - certsync.deployed
{%- if certsync.dns.domain %}
  - certsync.dns
{%- endif %}
{%- if consumer.relay.host %}
  - certsync.egress
{%- endif %}
{%- set mailcow = consumer.kind == "mailcow" %}
{%- if mailcow and "dovecot-mailcow" in consumer.services %}
  - certsync.dovecot
{%- endif %}

extend:
{%- for route in placed %}
{%-   set suffix = "" if route == "default" else "-" ~ route %}
  certsync-deployed{{ suffix }}:
    certsync.deployed:
      - require:
        - certsync: certsync-recipient-key
{%-   if mailcow and consumer.services and taken[route].kind == "mailcow" %}
        - mailcow: certsync-acme-stood-down
{%-   endif %}
{%-   if route in made %}
        - file: certsync-pair-dir{{ suffix }}
{%-   endif %}
{%- endfor %}

certsync-recipient-key:
  certsync.recipient_published:
    - name: certsync-recipient
    - sources: {{ taken.values() | map(attribute="source") | select | unique | sort | list | json }}
{%- if mailcow %}

certsync-mailcow-conf:
  mailcow.conf_set:
    - name: {{ consumer.mailcow_dir | json }}
    - settings: {{ consumer.mailcow_conf | json }}
{%- endif %}
{%- for route in placed %}
{%-   set suffix = "" if route == "default" else "-" ~ route %}
{%-   if taken[route].kind != "mailcow" %}

# Where certsync keeps the pair the service's files are written from.
certsync-pair-dir{{ suffix }}:
  file.directory:
    - name: {{ taken[route].dest | json }}
    - mode: '0755'
    - makedirs: true
{%-   elif route in made %}

# mailcow's per-name dir this route's certificate goes in (mailcow's own
# data/assets/ssl, the parent, must be there).
certsync-pair-dir{{ suffix }}:
  file.directory:
    - name: {{ taken[route].dest | json }}
    - mode: '0755'
{%-   endif %}
{%- endfor %}
{%- if mailcow and consumer.services %}

certsync-acme-stood-down:
  mailcow.acme_stood_down:
    - name: {{ consumer.mailcow_dir | json }}
    - require:
      - mailcow: certsync-mailcow-conf
{%- endif %}

certsync-alerts:
  beacon.present:
    - name: certsync
    - save: true
    - interval: {{ consumer.alerts.interval }}
    - alert_days: {{ consumer.alerts.days }}
    - grace: {{ consumer.alerts.grace }}
{%- if consumer.alerts.textfile %}
    - textfile: {{ consumer.alerts.textfile | json }}
{%- endif %}
{%- if consumer.alerts.event_log %}

# The event log's directory (alerts and deploy results as JSON lines, for a SIEM).
certsync-event-log-dir:
  file.directory:
    - name: {{ salt['file.dirname'](consumer.alerts.event_log) | json }}
    - mode: '0750'
    - makedirs: true
{%- endif %}
