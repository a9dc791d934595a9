//! Wire types shared by the coordinator and the partner agent (filled by a later issue).
