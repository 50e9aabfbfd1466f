// File: third_party/asio/include/boost/asio/ip/address.hpp
//
// Stands in front of the system <boost/asio/ip/address.hpp>: //third_party:asio puts
// third_party/asio/include on the -isystem path, ahead of /usr/include. g++ 12
// drops a system header's warning only when every frame of its inlining stack
// is in a system header, so Asio's -Wmaybe-uninitialized false positives
// (epoll_reactor::move_descriptor, inlined into our socket moves at -O1 and
// up) surface in our files. The pragma covers the locations of Asio's headers
// only: our own code, after the pop, is still checked.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include_next <boost/asio/ip/address.hpp>
#pragma GCC diagnostic pop
