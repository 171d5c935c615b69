// rfork's error codes as std::error_code: category, messages, comparisons.
#include "test_support.hpp"

#include <rfork/error.hpp>

#include <doctest/doctest.h>

#include <array>
#include <set>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>

using rfork::errc;

namespace {

constexpr std::array all_errc = {
    errc::bad_endpoint,      errc::agent_not_found,   errc::agent_lost,        errc::agent_unreachable,
    errc::dump_failed,       errc::transfer_failed,   errc::restore_failed,    errc::not_permitted,
    errc::internal_error,    errc::no_such_child,     errc::not_a_parent,      errc::timed_out,
    errc::limit_exceeded,    errc::file_unavailable,
    errc::bad_magic,         errc::unsupported_version, errc::unknown_role,
    errc::unexpected_role,   errc::bad_header,        errc::bad_checksum,      errc::frame_too_large,
    errc::truncated,         errc::malformed_message, errc::unexpected_message,
};

}  // namespace

static_assert(std::is_error_code_enum_v<errc>);

TEST_SUITE("unit.error") {

TEST_CASE("error: the category is named rfork") {
    CHECK(std::string_view(rfork::category().name()) == "rfork");
    CHECK(rfork::category() != std::generic_category());
    CHECK(rfork::category() != std::system_category());
}

TEST_CASE("error: values are fixed since they travel in error frames") {
    CHECK(static_cast<int>(errc::bad_endpoint) == 1);
    CHECK(static_cast<int>(errc::internal_error) == 9);
    CHECK(static_cast<int>(errc::not_a_parent) == 11);
    CHECK(static_cast<int>(errc::bad_magic) == 64);
    CHECK(static_cast<int>(errc::unexpected_message) == 73);
    for (auto e : all_errc) {
        CAPTURE(static_cast<int>(e));
        CHECK(static_cast<int>(e) > 0);
        CHECK(static_cast<int>(e) <= 0xFFFF);  // an error frame carries a u16
    }
}

TEST_CASE("error: every code has its own message") {
    const std::string unknown = rfork::category().message(0);
    CHECK_FALSE(unknown.empty());
    std::set<std::string> seen;
    for (auto e : all_errc) {
        CAPTURE(static_cast<int>(e));
        const auto text = rfork::category().message(static_cast<int>(e));
        CHECK_FALSE(text.empty());
        CHECK(text != unknown);
        CHECK(seen.insert(text).second);  // no two codes share a message
        CHECK(rfork::make_error_code(e).message() == text);
    }
}

TEST_CASE("error: values outside the enum get the unknown message") {
    const std::string unknown = rfork::category().message(0);
    for (int value : {-1, 15, 63, 74, 1000}) {
        CAPTURE(value);
        CHECK(rfork::category().message(value) == unknown);
    }
}

TEST_CASE("error: an errc converts implicitly to std::error_code") {
    std::error_code ec = rfork::errc::bad_magic;
    CHECK(ec);
    CHECK(ec.value() == 64);
    CHECK(&ec.category() == &rfork::category());
    CHECK(ec == rfork::make_error_code(errc::bad_magic));
    CHECK(ec == std::error_code(64, rfork::category()));

    ec = errc::truncated;  // assignment too
    CHECK(ec.value() == static_cast<int>(errc::truncated));
}

TEST_CASE("error: comparisons") {
    const std::error_code ec = errc::bad_checksum;
    CHECK(ec == errc::bad_checksum);
    CHECK(errc::bad_checksum == ec);
    CHECK(ec != errc::bad_header);
    CHECK_FALSE(ec == errc::bad_header);
    // The same number in another category is another error.
    CHECK(ec != std::error_code(static_cast<int>(errc::bad_checksum), std::generic_category()));
    CHECK(std::error_code(static_cast<int>(errc::bad_endpoint), std::system_category()) != errc::bad_endpoint);
    CHECK(std::error_code{} != errc::bad_checksum);
    CHECK_FALSE(std::error_code{});
}

TEST_CASE("error: std::system_error carries the code and both parts of the text") {
    const std::error_code ec = errc::agent_not_found;
    const std::system_error e(ec, "x-context");
    const std::string what = e.what();
    CHECK(what.find("x-context") != std::string::npos);
    CHECK(what.find(ec.message()) != std::string::npos);
    CHECK(e.code() == errc::agent_not_found);

    bool caught = false;
    try {
        throw std::system_error(errc::restore_failed, "fork_remote");
    } catch (const std::system_error& thrown) {
        caught = true;
        CHECK(thrown.code() == errc::restore_failed);
        CHECK(std::string(thrown.what()).find("fork_remote") != std::string::npos);
    }
    CHECK(caught);
}

}  // TEST_SUITE
