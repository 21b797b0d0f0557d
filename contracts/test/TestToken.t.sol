// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {Test} from "forge-std/Test.sol";
import {TestToken} from "../src/TestToken.sol";

contract TestTokenTest is Test {
    function test_metadataAndOpenMint() public {
        TestToken t = new TestToken("Test USD", "TUSD", 6);
        assertEq(t.name(), "Test USD");
        assertEq(t.symbol(), "TUSD");
        assertEq(t.decimals(), 6);
        address anyone = makeAddr("anyone");
        vm.prank(anyone);
        t.mint(anyone, 123e6);
        assertEq(t.balanceOf(anyone), 123e6);
        assertEq(t.totalSupply(), 123e6);
    }

    function test_decimalsFromConstructor() public {
        assertEq(new TestToken("Ether-like", "TETH", 18).decimals(), 18);
    }
}
