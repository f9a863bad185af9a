{#- The mail DNS audit on a consumer: MX, A/AAAA, PTR, SPF, DKIM, DMARC,
    client autoconfiguration, the relay's return path, TLSA, and when the
    pillar asks MTA-STS, TLS-RPT and CAA, checked
    against the `certsync:dns` pillar. Read-only: a failing record fails
    this state and names the record. #}
{%- from "certsync/map.jinja" import certsync, consumer with context %}
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
{%- for option in ["mx", "addresses", "dkim_selectors", "tlsa_ports", "nameservers"] %}
{%-   if dns[option] %}
    - {{ option }}: {{ dns[option] | json }}
{%-   endif %}
{%- endfor %}
    - spf_all: {{ dns.spf_all | json }}
{%- if dns.dmarc_policy %}
    - dmarc_policy: {{ dns.dmarc_policy | json }}
{%- endif %}
{%- if dns.return_path %}
    - return_path: {{ dns.return_path | json }}
{%- endif %}
    - autoconfig: {{ dns.autoconfig | json }}
    - dns_port: {{ dns.dns_port }}
    - dnssec: {{ dns.dnssec | json }}
{%- for option in ["mta_sts", "tls_rpt", "caa", "caa_issuer", "ca_file", "probe_addresses"] %}
{%-   if dns.get(option) %}
    - {{ option }}: {{ dns[option] | json }}
{%-   endif %}
{%- endfor %}
{%- if dns.get("caa") and not dns.tlsa_ports %}
    - certs:
        deployed: {{ (consumer.mailcow_dir ~ "/data/assets/ssl/cert.pem") | json }}
{%- endif %}
{%- if dns.tlsa_ports %}
    - certs:
        deployed: {{ (consumer.mailcow_dir ~ "/data/assets/ssl/cert.pem") | json }}
    - probe_address: {{ consumer.probe_address | json }}
    - key_kept: {{ salt["certsync_settings.reuse_key_wanted"]()["wanted"] | json }}
{%- endif %}
{%- if https and consumer.probe_address %}
{%-   if not dns.tlsa_ports %}
    - probe_address: {{ consumer.probe_address | json }}
{%-   endif %}
    - probe_ports: {443: {{ (https | string).split(":")[-1] | int }}}
{%- endif %}
