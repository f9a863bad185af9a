{#- The gate of every certsync SLS that changes anything: this minion's
    certsync pillar checked first (certsync_settings.check: a key the formula
    does not know, a missing hostname, a credential of another minion, a
    pillar that does not name this minion). On a failure the run stops
    there (failhard): nothing else in it is applied, and the comment names
    each problem. Included by every SLS of the formula but absent. #}

certsync-settings:
  certsync.settings_valid:
    - order: 1
    - failhard: true
