"""The soak's core, shared by ``bench/soak.py`` (minutes, its own server) and
``tests/integration/test_soak.py`` (a short run on the session's server).

It imports only the standard library, httpx, psutil and prometheus_client (all
hotswap dependencies), never bench/common.py or tests/support: the tests load this
package by its path (``tests/support/soak.py``), so it must stand on its own. Adapter
archives are injected (``ArchiveFactory``), each side building them with its own helpers.

- ``config``: the server under soak, the settings, the prompts, the archive factory;
- ``oracle``: which answers are allowed for a request, given the admin ops around it;
- ``probes``: RSS of the server's process tree, the engine's in-flight gauges;
- ``mutator``: the one sequential writer of the soak's refs (the admin ops);
- ``traffic``: the clients' greedy requests;
- ``reference``: the quiet reference run and the judgement of every answer;
- ``result``: the admin-op records, the live counts and the result with its summary;
- ``run``: the phases (set-up, traffic + mutations, leak check, quiet reference run,
  judgement, clean-up), ``soak()``.
"""

from .config import PROMPTS, ArchiveFactory, Prompt, SoakConfig, Target
from .oracle import BASE, Outcome, Record, RefOp, Timeline, judge
from .probes import RssSample, RssVerdict, judge_rss
from .result import Live, SoakResult
from .run import soak

__all__ = [
    "BASE",
    "PROMPTS",
    "ArchiveFactory",
    "Live",
    "Outcome",
    "Prompt",
    "Record",
    "RefOp",
    "RssSample",
    "RssVerdict",
    "SoakConfig",
    "SoakResult",
    "Target",
    "Timeline",
    "judge",
    "judge_rss",
    "soak",
]
