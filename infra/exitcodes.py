"""The one exit-code policy of every pg-platform command (`python -m infra …`).

0  ok: done, healthy, nothing pending.
1  attention: degraded, something pending, or the command refused (an edited
   migration, a failed restore drill): the stack is readable, a person should look.
2  error: the command could not do its job (bad input, unreachable stack, a
   failed migration, an unhealthy stack).
"""

from __future__ import annotations

OK = 0
ATTENTION = 1
ERROR = 2
