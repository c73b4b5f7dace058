//! Pure functions turning decoded snapshot entries and journal commands into Redis commands.
