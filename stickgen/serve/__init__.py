"""Serving: the Ray Serve application and its clients.

    app      the Serve application: Api (FastAPI ingress) -> Generator (@serve.batch +
             @serve.multiplexed) and Renderer; `build_app` for `serve run` / config files
    deploy   cluster/serve.yaml to a running cluster (`stickgen serve deploy`)
    client   a standard-library HTTP client (`stickgen client generate`)
    static/  the web page served at /

Nothing here imports Ray or torch at package import; `app` imports Ray Serve.
"""
