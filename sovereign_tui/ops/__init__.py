"""Operations: provision, drain and migrate across the layers, safely.

Every action is a plan first (`plan`, `planners`, `provisioning`), then a confirmation, then a
run (`executor`) journaled step by step (`journal`), holding its hosts (`leases`), checked against
the actor's role (`roles`) and recorded in the hash-chained audit log (`audit`). The adapters in
`actions` perform steps through the real SDKs. `engine.Operations` is the entry point.

Kept free of imports here: `sovereign_tui.config` loads `ops.settings`, and the rest loads the SDKs.
"""
