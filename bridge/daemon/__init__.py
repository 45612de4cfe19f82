"""`sigbridge run`: the bridge daemon, a thin pump around ``bridge.core.engine.Engine``."""
