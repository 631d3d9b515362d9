"""The server's defaults: address, port and the limits every request is held to."""

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8500
DEFAULT_MAX_BODY_BYTES = 10 << 20     # a phone photo fits; a 100 MB upload does not
DEFAULT_MAX_BATCH = 64                # instances per request
DEFAULT_TIMEOUT_S = 10.0              # to send a whole request (line, headers, body); keep-alive idle time
