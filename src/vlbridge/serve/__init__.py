"""An OpenAI-compatible server for vlbridge models: `vlbridge serve --model DIR`.

``app.create_app`` builds the FastAPI app (chat completions, streaming, the web demo at ``/``) over a
``scheduler.Scheduler``, which runs continuous batching (``engine.BatchEngine``) on its own thread.
Images arrive as data URLs, allow-listed remote URLs or paths inside an allowed folder (``images``).
"""
