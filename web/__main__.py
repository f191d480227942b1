"""``python -m web``: the live topic-exploration page on http://127.0.0.1:8080/."""

from web.server import main

main()
