# The certsync pillar goes to the NPM minion (the source) and the mailcow
# minion (the consumer); certsync/map.jinja tells each its role by its id.
# The mail host's own SLS, with its credentials when it has any, goes to it
# alone: the NPM host never reads them (certsync_settings.check fails on a
# minion whose pillar holds another minion's credential).
base:
  'npm or mailcow':
    - match: compound
    - certsync
  'mailcow':
    - certsync-mailcow
