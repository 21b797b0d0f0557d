"""Run localstripe (tools/venv) bound to a loopback address.

The `localstripe` CLI always binds [::] (every interface, IPv4 and IPv6) and
pickles its whole store to the shared file /tmp/localstripe.pickle after every
write, reloading it at start. This launcher instead:
  * binds --host (default 127.0.0.1) and --port (0 = pick a free port);
  * keeps the store in memory only (no /tmp/localstripe.pickle), unless
    --state-file PATH is given (then that file is loaded at start, if present,
    and rewritten after every write);
  * prints exactly one line "localstripe listening on http://HOST:PORT" to
    stdout (flushed) once the server accepts connections;
  * exits 0 on SIGTERM / SIGINT.

Usage: tools/localstripe-serve --port 8420 [--host 127.0.0.1] [--quiet]
(tools/localstripe-serve execs tools/venv/bin/python on this file.)
"""
import os
import sys

try:
    import localstripe  # noqa: F401
except ImportError:
    sys.exit('localstripe_serve.py: localstripe is not importable; run it with '
             'tools/venv/bin/python (or use tools/localstripe-serve) after scripts/setup.sh')

import argparse  # noqa: E402
import logging  # noqa: E402
import pickle  # noqa: E402
import socket  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description='localstripe on a loopback address')
    parser.add_argument('--host', default='127.0.0.1')
    parser.add_argument('--port', type=int, default=8420)
    parser.add_argument('--state-file', default=None,
                        help='persist the store to this file (default: memory only)')
    parser.add_argument('--quiet', action='store_true', help='no access log')
    args = parser.parse_args()

    from aiohttp import web
    from localstripe import resources
    from localstripe.server import app

    store_cls = resources.Store
    if args.state_file:
        path = args.state_file

        def dump_to_disk(self):
            tmp = path + '.tmp'
            with open(tmp, 'wb') as f:
                pickle.dump(dict(self), f, protocol=pickle.HIGHEST_PROTOCOL)
            os.replace(tmp, path)

        store_cls.dump_to_disk = dump_to_disk
        try:
            with open(path, 'rb') as f:
                dict.update(resources.store, pickle.load(f))
        except FileNotFoundError:
            pass
    else:
        store_cls.dump_to_disk = lambda self: None

    family = socket.AF_INET6 if ':' in args.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    port = sock.getsockname()[1]
    host = f'[{args.host}]' if family == socket.AF_INET6 else args.host

    access_log = None
    if not args.quiet:
        access_log = logging.getLogger('aiohttp.access')
        access_log.setLevel(logging.DEBUG)
        access_log.addHandler(logging.StreamHandler())
    else:
        # localstripe also logs webhook deliveries on this logger.
        logging.getLogger('aiohttp.access').setLevel(logging.WARNING)

    def ready(_msg):
        print(f'localstripe listening on http://{host}:{port}', flush=True)

    web.run_app(app, sock=sock, access_log=access_log, print=ready,
                handle_signals=True)


if __name__ == '__main__':
    main()
