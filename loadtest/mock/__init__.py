"""The embedded mock PolyAI Chat API: the default target, so everything runs offline.

Faithful to the reference (``shared/reference/chat-api.md``) and to :mod:`loadtest.api`,
with per-region latency profiles, variants, a capacity model, fault injection and admin
stats. One module per concept:

* :mod:`.profiles` latency distributions, variants, the capacity model
* :mod:`.faults`   fault spec strings and the seeded draw
* :mod:`.agent`    the agent's replies, end_conversation and handoff
* :mod:`.state`    open conversations, idle expiry, the size cap
* :mod:`.config`   MockConfig and TOML loading
* :mod:`.service`  one region's API, independent of HTTP (the documented error decisions)
* :mod:`.protocol` the fast HTTP/1.1 front end (httptools)
* :mod:`.server`   aiohttp app factory, AsyncMockServer, MockServer (thread)
* :mod:`.cli`      ``loadtest mock``

Typical use::

    from loadtest.mock import MockConfig, MockServer
    with MockServer(MockConfig(latency_scale=0)) as mock:
        mock.base_urls["uk"]
"""

from loadtest.mock.config import MockConfig, config_from_dict, load_config
from loadtest.mock.faults import Fault, parse_fault, parse_faults
from loadtest.mock.profiles import LogNormal, RegionProfile, Variant, default_regions, default_variants
from loadtest.mock.server import AsyncMockServer, MockServer, make_app
from loadtest.mock.service import RegionService

__all__ = [
    "AsyncMockServer",
    "Fault",
    "LogNormal",
    "MockConfig",
    "MockServer",
    "RegionProfile",
    "RegionService",
    "Variant",
    "config_from_dict",
    "default_regions",
    "default_variants",
    "load_config",
    "make_app",
    "parse_fault",
    "parse_faults",
]
