"""The http output's server side: live annotated views, Prometheus metrics, the aiohttp server and the static
status page (static/, plain HTML/JS/CSS shipped as package data, no build step)."""
