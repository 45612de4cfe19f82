"""The session hub's sans-I/O core: the state that takes every admission decision
(:mod:`~bridge.core.hub.state`), the rules it applies (:mod:`~bridge.core.hub.admission`), the engine
interface where sessions live (:mod:`~bridge.core.hub.engine`) and its in-memory implementation
(:mod:`~bridge.core.hub.memory`), members and their life-cycle table (:mod:`~bridge.core.hub.member`),
bounds (:mod:`~bridge.core.hub.limits`), counters (:mod:`~bridge.core.hub.counters`) and the REST
credentials (:mod:`~bridge.core.hub.restauth`). The I/O adapters are in :mod:`bridge.hub`."""

from bridge.core.hub.engine import Admitted, HubEngine, JoinRequest, Refusal, ResumeRequest
from bridge.core.hub.limits import Budget, LogGate, ResumeThrottle
from bridge.core.hub.member import Link, Member
from bridge.core.hub.memory import MemoryEngine
from bridge.core.hub.restauth import ReplayCache, verify_app_jwt, verify_project_jwt
from bridge.core.hub.state import CONTINUE, FLOODED, PONG, STOP, HubLog, HubState

__all__ = ["CONTINUE", "FLOODED", "PONG", "STOP", "Admitted", "Budget", "HubEngine", "HubLog", "HubState",
           "JoinRequest", "Link", "LogGate", "Member", "MemoryEngine", "Refusal", "ReplayCache",
           "ResumeRequest", "ResumeThrottle", "verify_app_jwt", "verify_project_jwt"]
