# The certsync pillar goes to the NPM minion (the source) and the mailcow
# minion (the consumer); certsync/map.jinja tells each its role by its id.
base:
  'npm or mailcow':
    - match: compound
    - certsync
