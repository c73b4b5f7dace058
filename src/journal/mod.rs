//! Sans-IO decoder of Dragonfly's journal stream (packed integers, opcodes, LSNs).
