"""
Register twistgate as a twistd plugin: C{twistd -n twistgate --config kong.yml}.
"""

from twisted.application.service import ServiceMaker

twistgate = ServiceMaker(
    "twistgate",
    "twistgate.tap",
    "An API gateway running Proxy-Wasm filters, configured like Kong (kong.yml)",
    "twistgate",
)
