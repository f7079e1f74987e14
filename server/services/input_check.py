"""The input-schema check at submit, off the event loop and bounded in time.

Patterns match on RE2 and nothing is fetched (``agents.schemas``), so a check costs time
roughly linear in the input, which is itself capped (``max_input_bytes``). Some keywords are
still super-linear (``uniqueItems`` compares items pairwise), so the check runs on a small
dedicated thread pool, never on the event loop, and the caller stops waiting after
``CHECK_SECONDS``: the request is answered RESOURCE_EXHAUSTED naming ``input_json`` while the
rest of the control plane keeps serving. The pool's size bounds how many checks run at once;
a check waiting for a thread counts toward its bound.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from agents.inputs import InputMismatch, SchemaUnusable, check_input
from agents.manifest import Capability
from server.domain.errors import FailedPrecondition, InvalidArgument, ResourceExhausted

CHECK_SECONDS = 2.0
_POOL = ThreadPoolExecutor(max_workers=2, thread_name_prefix="input-check")


async def check_input_bounded(cap: Capability, payload: Any, *, seconds: float = CHECK_SECONDS) -> None:
    """Raise INVALID_ARGUMENT (``input_json``) unless ``payload`` matches ``cap``'s input schema."""
    loop = asyncio.get_running_loop()
    try:
        await asyncio.wait_for(loop.run_in_executor(_POOL, check_input, cap, payload), seconds)
    except InputMismatch as e:
        raise InvalidArgument("input_json", f"does not match the input schema at {e.path}: "
                              f"{e.problem}") from None
    except SchemaUnusable as e:
        raise FailedPrecondition(f"the input schema of capability {cap.name!r} cannot be applied "
                                 f"safely ({e}); register a version whose schema does") from None
    except RecursionError:
        raise InvalidArgument("input_json", "is nested too deeply to check against the input "
                              "schema") from None
    except TimeoutError:
        raise ResourceExhausted(f"input_json: checking the input against the input schema of "
                                f"capability {cap.name!r} took longer than {seconds:g}s; "
                                "send a smaller input") from None
