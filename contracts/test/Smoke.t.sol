// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

import {Test} from "forge-std/Test.sol";
import {Smoke} from "../src/Smoke.sol";

contract SmokeTest is Test {
    Smoke internal smoke;

    function setUp() public {
        smoke = new Smoke();
    }

    function test_set() public {
        smoke.set(42);
        assertEq(smoke.value(), 42);
    }
}
