"""The serving table: which adapter versions this process serves, under which engine id,
in which state (:mod:`.table`), how ``model`` names reach them (:mod:`.models`), and where
the engine holds them now (:mod:`.residency`)."""
