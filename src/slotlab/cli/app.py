"""``slotlab app``: take a scene apart in the browser (see :mod:`slotlab.app`)."""

from __future__ import annotations

import socket

from slotlab.cli.options import number


def add_app(sub) -> None:
    p = sub.add_parser(
        "app",
        help="explore and edit a model's scenes, slot by slot, in the browser",
        description="Serve a page (Gradio) that shows a scene's reconstruction, segmentation and every "
        "slot's mask and content; click an object to select its slot; remove it, keep some slots, swap "
        "in a slot of another scene, insert a concept of a library, move a posed slot; decode (LSD: by "
        "sampling, the rest of the image kept); download the image and the slots. Needs the app extra: "
        "pip install -e '.[app]'. Without --checkpoint it opens the model `slotlab demo` wrote.",
    )
    p.add_argument("--checkpoint", help="model folder, run folder or .ckpt (default: slotlab-demo/model)")
    p.add_argument("--library", help="a concept library (`slotlab concepts build`) to insert concepts from")
    p.add_argument(
        "--data",
        help="a store, a .npz or image files (a folder, a glob, one file) to browse (default: the model's held-out "
        "test split)",
    )
    number(p, "--port", minimum=1, maximum=65535, type=int, default=7860, help="port (default 7860)")
    p.add_argument("--host", default="127.0.0.1", help="address to serve on (default 127.0.0.1; 0.0.0.0 for all)")
    p.set_defaults(func=cmd_app)


def cmd_app(args) -> int:
    from slotlab.errors import ConfigError

    try:
        from slotlab.app import serve
    except ImportError as e:
        raise ConfigError(f"slotlab app needs Gradio: pip install -e '.[app]' ({e})") from None
    try:  # else the server's log and a wrong "no empty port" message, two lines
        socket.getaddrinfo(args.host, args.port)
    except (socket.gaierror, UnicodeError) as e:
        raise ConfigError(f"--host {args.host}: cannot resolve it ({e})") from None
    print(f"slotlab app: http://{args.host}:{args.port} (Ctrl-C stops it)", flush=True)
    serve(args.checkpoint, args.library, args.data, args.port, args.host, block=True)
    return 0
