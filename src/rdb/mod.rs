//! Sans-IO decoder of Dragonfly's full-sync snapshot stream (RDB with Dragonfly's opcodes).
