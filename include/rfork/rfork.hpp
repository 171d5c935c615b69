// rfork: fork() across machines. Include this one header.
#pragma once

#include <rfork/endpoint.hpp>
#include <rfork/error.hpp>
#include <rfork/fork_remote.hpp>
#include <rfork/fork_result.hpp>
#include <rfork/options.hpp>
