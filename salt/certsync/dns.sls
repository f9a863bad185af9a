{#- The mail DNS audit on a consumer: MX, A/AAAA, PTR, SPF, DKIM, DMARC,
    client autoconfiguration, the relay's return path, TLSA, and when the
    pillar asks MTA-STS, TLS-RPT and CAA, checked
    against the `certsync:dns` pillar. Read-only: a failing record fails
    this state and names the record. #}
{%- from "certsync/map.jinja" import certsync, consumer with context %}

include:
  - certsync.settings
{%- set dns = certsync.dns %}
{#- Where this consumer serves HTTPS (mailcow.conf's HTTPS_PORT), for the
    autoconfig/autodiscover names checked over HTTPS. #}
{%- set endpoints = salt["certsync_settings.consumer"]().endpoints or [] %}
{%- if endpoints is mapping %}
{%-   set https = endpoints.get("https") %}
{%- else %}
{%-   set https = 443 if "https" in endpoints else none %}
{%- endif %}

certsync-mail-dns:
  maildns.records_ok:
    - name: {{ dns.domain | json }}
    - hostname: {{ certsync.hostname | json }}
{#- Every certsync:dns key that is an option of the audit, when set (false and 0
    are settings too): the options come from maildns.audit_options, so a new
    check's option needs no line here. #}
{%- for option in salt["maildns.audit_options"]() | sort %}
{%-   if option in dns and dns[option] not in (none, "", [], {}) %}
    - {{ option }}: {{ dns[option] | json }}
{%-   endif %}
{%- endfor %}
{%- if dns.get("caa") and not dns.tlsa_ports %}
    - certs:
        deployed: {{ (salt["certsync_settings.dest"]() ~ "/cert.pem") | json }}
{%- endif %}
{%- if dns.tlsa_ports %}
    - certs:
        deployed: {{ (salt["certsync_settings.dest"]() ~ "/cert.pem") | json }}
    - probe_address: {{ consumer.probe_address | json }}
    - key_kept: {{ salt["certsync_settings.reuse_key_wanted"]()["wanted"] | json }}
{%- endif %}
{%- if https and consumer.probe_address %}
{%-   if not dns.tlsa_ports %}
    - probe_address: {{ consumer.probe_address | json }}
{%-   endif %}
    - probe_ports: {443: {{ (https | string).split(":")[-1] | int }}}
{%- endif %}
