//! Differential-privacy mechanisms (filled by a later issue).
