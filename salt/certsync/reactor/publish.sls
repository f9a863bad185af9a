{#- On `salt/beacon/*/certsync/renewed` (a source saw a new certificate) and
    `certsync/recipient` (a consumer made a new recipient key): the source
    publishes again. The runner finds it in the pillar the master compiles
    for the sender; the event only says who sent it. A renewal the source's
    certsync_watch engine published itself says `published: true`: nothing
    to do (it can only spare its own sender a publication). #}
{%- set sender = data.get("id", "") %}
{%- if sender is string and sender and data.get("published") is not sameas true %}
certsync-publish:
  runner.certsync.{{ "on_renewed" if tag.startswith("salt/beacon/") else "on_recipient" }}:
    - args:
      - {{ ("source" if tag.startswith("salt/beacon/") else "consumer") }}: {{ sender | json }}
{%- endif %}
