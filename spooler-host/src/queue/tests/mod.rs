//! In-process tests of the queue manager, over a memory store and scripted transports:
//! routing, deferrals, finishing and operators' commands; and the retry policy on its own.

mod commands;
mod deferrals;
mod finishing;
mod observed;
mod policy;
mod routing;
