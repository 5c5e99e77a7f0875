"""The HTTP API gateway's sans-I/O core: targets, policies, heads, headers, scheduling.

The gateway's app port takes HTTP requests, finds the target for their Host, checks
the target's path/method policy and relays the request through a connector that
serves the target.  Everything here decides; nothing here reads a socket or a clock
(``cc/gateway/apigw`` does the I/O).
"""
