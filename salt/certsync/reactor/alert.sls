{#- Forward a consumer's alert (the certsync beacon's
    salt/beacon/<id>/certsync/alert/<condition>) as one `certsync/alert`
    event on the master's bus (and a beacon's own failure,
    salt/beacon/<id>/certsync/error, as condition `beacon_error`), for whatever watches it (an engine, a
    returner, salt-api's event stream), and, when the master sets
    `certsync_alert_webhook`, POST it there as JSON. Only known conditions
    pass; the text is cut to a bounded length. #}
{%- set conditions = ["expiry", "mismatch", "unreachable", "deploy_failed", "dane_pending", "uncovered", "relay_failing", "beacon_error"] %}
{%- set condition = data.get("condition") %}
{%- set detail = data.get("detail", "") %}
{%- if tag.endswith("/certsync/error") %}
{%-   set condition = "beacon_error" %}
{%-   set detail = data.get("error", "") %}
{%- endif %}
{%- set webhook = opts.get("certsync_alert_webhook") %}
{%- if condition is string and condition in conditions %}
{%-   set alert = {
        "minion": data.get("id", "") | string | truncate(128, True, ""),
        "condition": condition,
        "hostname": data.get("hostname", "") | string | truncate(253, True, ""),
        "detail": detail | string | truncate(1000, True, "..."),
      } %}
certsync-alert-event:
  runner.event.send:
    - args:
      - tag: certsync/alert
      - data: {{ alert | json }}
{%-   if webhook %}

certsync-alert-webhook:
  runner.http.query:
    - args:
      - url: {{ webhook | json }}
      - method: POST
      - header_dict: {"Content-Type": "application/json"}
      - data: {{ alert | json | json }}
{%-   endif %}
{%- endif %}
