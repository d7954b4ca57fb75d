"""The gateway's routes, one ``APIRouter`` per concern; :func:`odyssey.deploy.server.create_app`
includes them in this order (the order of the OpenAPI document): docs, ops (/health,
/metrics), openai (/v1/...), feedback, ui. Each route finds the shared state through
:meth:`odyssey.deploy.gateway.Gateway.of`.
"""
