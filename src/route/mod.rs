//! Cluster slot routing: CRC16, hashtags, slot maps, splitting multi-key commands.
