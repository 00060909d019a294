"""Serving: the HTTP app (FastAPI) over the Answerer, with request batching; static/ holds the demo page.

FastAPI is an optional dependency (`pip install 'loraqa[serve]'`): asking for it here makes a
missing install one clear error line when the server is started, not a traceback.
"""

from loraqa.optional import require

require("fastapi", "loraqa serve")
