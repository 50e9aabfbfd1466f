// File: tools/cli/interrupt.h
//
// SIGINT and SIGTERM cancel whatever `livemig` runs. main() calls
// StartSignalThread() first; a command then registers how to cancel what it
// is doing:
//
//   Sender sender(options);
//   SetCancel([&sender] { sender.Cancel(); });
//   if (Interrupted()) sender.Cancel();  // A signal from before SetCancel.
//   ... sender.Migrate(...) ...
//   SetCancel(nullptr);                  // Before `sender` goes away.
//
// On each signal the signal thread prints "\nlivemig: <signal name>,
// aborting" to stderr, sets Interrupted(), and calls the current callback,
// if any, on itself. The callback runs under the lock SetCancel takes, so
// once SetCancel(nullptr) returned the old callback is neither running nor
// called again: it may capture what the command's stack owns.
//
// A signal that comes before SetCancel finds no callback (or the previous
// one); the Interrupted() check right after SetCancel catches it: either the
// signal thread took the lock after SetCancel and calls the new callback, or
// it set the flag before releasing the lock SetCancel then took, and the
// check sees it.
//
// Thread safety: every function may be called from any thread.
#ifndef LIVEMIG_TOOLS_CLI_INTERRUPT_H_
#define LIVEMIG_TOOLS_CLI_INTERRUPT_H_

#include <functional>

namespace livemig::cli {

// Blocks SIGINT and SIGTERM in the calling thread (and so in every thread it
// creates afterwards) and handles them on a detached thread of its own.
// REQUIRES: called once, before any other thread is started.
void StartSignalThread();

// Replaces the callback a signal calls; nullptr: none.
void SetCancel(std::function<void()> cancel);

// Whether SIGINT or SIGTERM came since StartSignalThread().
bool Interrupted();

}  // namespace livemig::cli

#endif  // LIVEMIG_TOOLS_CLI_INTERRUPT_H_
