# The mail host's own certsync settings, merged into certsync.sls's on that
# host only (top.sls). Its credentials belong here and nowhere else, e.g. for
# a DANE rollover through Cloudflare (the token: Zone > DNS > Edit, this zone):
#
# certsync:
#   consumers:
#     mailcow:
#       dane:
#         update:
#           api_token: <token>
certsync:
  consumers:
    mailcow: {}
