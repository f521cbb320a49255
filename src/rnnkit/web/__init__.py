"""``rnnkit serve``: a page to sample from a trained model and watch its units, and the JSON API behind it.

``rnnkit.web.service`` holds the rules (limits, sampling, tracing) in plain Python; ``rnnkit.web.app`` is the
FastAPI app (needs the ``web`` extra: ``pip install 'rnnkit[web]'``); ``static/`` is the page, served as is.
"""
