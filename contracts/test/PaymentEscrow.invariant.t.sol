// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {Test} from "forge-std/Test.sol";
import {CommonBase} from "forge-std/Base.sol";
import {StdCheats} from "forge-std/StdCheats.sol";
import {StdUtils} from "forge-std/StdUtils.sol";
import {PaymentEscrow} from "../src/PaymentEscrow.sol";
import {TestToken} from "../src/TestToken.sol";

/// Drives the escrow with random but valid operations (invariant runs use fail_on_revert, so
/// every call the handler makes must succeed) and keeps ghost totals per asset.
contract EscrowHandler is CommonBase, StdCheats, StdUtils {
    PaymentEscrow public immutable escrow;
    TestToken public immutable token;
    address public immutable operator;
    address public immutable feeRecipient;

    address[3] internal payers;
    address[2] internal merchants;
    address internal constant ETH = address(0);

    bytes32[] public ids;
    uint256 internal saltNonce;
    uint256 internal settlementNonce;

    // Ghost totals, per asset (index 0 = ETH, 1 = token).
    uint256[2] public deposited;
    uint256[2] public captured;
    uint256[2] public fees;
    uint256[2] public voided;
    uint256[2] public reclaimed;
    uint256[2] public refunded;
    uint256[2] public funded;
    uint256[2] public withdrawn;
    uint256[2] public settled;

    constructor(PaymentEscrow escrow_, TestToken token_, address operator_, address feeRecipient_) {
        escrow = escrow_;
        token = token_;
        operator = operator_;
        feeRecipient = feeRecipient_;
        payers = [makeAddr("payer0"), makeAddr("payer1"), makeAddr("payer2")];
        merchants = [makeAddr("merchant0"), makeAddr("merchant1")];
        for (uint256 i; i < payers.length; i++) {
            vm.prank(payers[i]);
            token.approve(address(escrow), type(uint256).max);
        }
        vm.prank(operator);
        token.approve(address(escrow), type(uint256).max);
    }

    // ------------------------------------------------------------ views for the invariants

    function idCount() external view returns (uint256) {
        return ids.length;
    }

    function allMerchants() external view returns (address[2] memory) {
        return merchants;
    }

    function assetOf(uint256 i) public view returns (address) {
        return i == 0 ? ETH : address(token);
    }

    // ------------------------------------------------------------ actions

    function depositEth(uint256 payerSeed, uint256 merchantSeed, uint256 amount, uint256 ttl) external {
        _deposit(0, payerSeed, merchantSeed, _bound(amount, 1, 100 ether), ttl);
    }

    function depositToken(uint256 payerSeed, uint256 merchantSeed, uint256 amount, uint256 ttl) external {
        _deposit(1, payerSeed, merchantSeed, _bound(amount, 1, 1e12), ttl);
    }

    function capture(uint256 idSeed, uint256 amount, uint256 feeBps) external {
        (bool found, bytes32 id) = _pick(idSeed, _capturable);
        if (!found) return;
        (,, address asset, uint256 total,, uint256 alreadyCaptured,,) = escrow.payments(id);
        amount = _bound(amount, 1, total - alreadyCaptured);
        uint256 fee = amount * _bound(feeBps, 0, 10_000) / 10_000;
        vm.prank(operator);
        escrow.capture(id, amount, fee);
        uint256 a = _index(asset);
        captured[a] += amount;
        fees[a] += fee;
    }

    function voidPayment(uint256 idSeed) external {
        (bool found, bytes32 id) = _pick(idSeed, _open);
        if (!found) return;
        (,, address asset, uint256 total,, uint256 alreadyCaptured,,) = escrow.payments(id);
        vm.prank(operator);
        escrow.void(id);
        voided[_index(asset)] += total - alreadyCaptured;
    }

    function reclaim(uint256 idSeed) external {
        (bool found, bytes32 id) = _pick(idSeed, _open);
        if (!found) return;
        (address payer,, address asset, uint256 total, uint64 exp, uint256 alreadyCaptured,,) = escrow.payments(id);
        if (block.timestamp < exp) vm.warp(exp);
        vm.prank(payer);
        escrow.reclaim(id);
        reclaimed[_index(asset)] += total - alreadyCaptured;
    }

    function refund(uint256 idSeed, uint256 amount) external {
        (bool found, bytes32 id) = _pick(idSeed, _refundable);
        if (!found) return;
        (,, address asset,,, uint256 alreadyCaptured, uint256 alreadyRefunded,) = escrow.payments(id);
        amount = _bound(amount, 1, alreadyCaptured - alreadyRefunded);
        vm.startPrank(operator);
        if (asset == ETH) {
            vm.deal(operator, amount);
            escrow.refund{value: amount}(id, amount);
        } else {
            token.mint(operator, amount);
            escrow.refund(id, amount);
        }
        vm.stopPrank();
        refunded[_index(asset)] += amount;
    }

    function fund(uint256 assetSeed, uint256 amount) external {
        uint256 a = assetSeed % 2;
        amount = _bound(amount, 1, a == 0 ? 100 ether : 1e12);
        vm.startPrank(operator);
        if (a == 0) {
            vm.deal(operator, amount);
            escrow.fund{value: amount}(ETH, amount);
        } else {
            token.mint(operator, amount);
            escrow.fund(address(token), amount);
        }
        vm.stopPrank();
        funded[a] += amount;
    }

    function withdraw(uint256 assetSeed, uint256 amount) external {
        uint256 a = assetSeed % 2;
        uint256 available = escrow.liquidity(assetOf(a));
        if (available == 0) return;
        amount = _bound(amount, 1, available);
        vm.prank(operator);
        escrow.withdraw(assetOf(a), amount, operator);
        withdrawn[a] += amount;
    }

    function settle(uint256 assetSeed, uint256 merchantSeed, uint256 amount) external {
        uint256 a = assetSeed % 2;
        uint256 available = escrow.liquidity(assetOf(a));
        if (available == 0) return;
        amount = _bound(amount, 1, available);
        bytes32 sid = keccak256(abi.encode("settlement", settlementNonce++));
        vm.prank(operator);
        escrow.settle(sid, merchants[merchantSeed % 2], assetOf(a), amount, "ref");
        settled[a] += amount;
    }

    function warp(uint256 secondsForward) external {
        vm.warp(block.timestamp + _bound(secondsForward, 1, 2 days));
    }

    // ------------------------------------------------------------ internals

    function _deposit(uint256 a, uint256 payerSeed, uint256 merchantSeed, uint256 amount, uint256 ttl) internal {
        address payer = payers[payerSeed % payers.length];
        address merchant = merchants[merchantSeed % merchants.length];
        uint64 exp = uint64(block.timestamp + _bound(ttl, 1, 7 days));
        bytes32 salt = bytes32(++saltNonce);
        bytes32 id;
        vm.startPrank(payer);
        if (a == 0) {
            vm.deal(payer, payer.balance + amount);
            id = escrow.deposit{value: amount}(merchant, exp, salt);
        } else {
            token.mint(payer, amount);
            id = escrow.depositToken(merchant, address(token), amount, exp, salt);
        }
        vm.stopPrank();
        ids.push(id);
        deposited[a] += amount;
    }

    function _index(address asset) internal pure returns (uint256) {
        return asset == ETH ? 0 : 1;
    }

    function _open(bytes32 id) internal view returns (bool) {
        (,,,,,,, bool closed) = escrow.payments(id);
        return !closed;
    }

    function _capturable(bytes32 id) internal view returns (bool) {
        (,,,, uint64 exp,,, bool closed) = escrow.payments(id);
        return !closed && block.timestamp < exp;
    }

    function _refundable(bytes32 id) internal view returns (bool) {
        (,,,,, uint256 c, uint256 r,) = escrow.payments(id);
        return c > r;
    }

    /// First id, starting from a random position, that satisfies `ok`.
    function _pick(uint256 seed, function(bytes32) internal view returns (bool) ok)
        internal
        view
        returns (bool, bytes32)
    {
        uint256 n = ids.length;
        if (n == 0) return (false, 0);
        uint256 start = seed % n;
        for (uint256 i; i < n; i++) {
            bytes32 id = ids[(start + i) % n];
            if (ok(id)) return (true, id);
        }
        return (false, 0);
    }
}

contract PaymentEscrowInvariantTest is Test {
    PaymentEscrow internal escrow;
    TestToken internal token;
    EscrowHandler internal handler;
    address internal operator = makeAddr("operator");
    address internal feeRecipient = makeAddr("feeRecipient");

    function setUp() public {
        vm.warp(1_700_000_000);
        escrow = new PaymentEscrow(makeAddr("owner"), operator, feeRecipient);
        token = new TestToken("Test USD", "TUSD", 6);
        handler = new EscrowHandler(escrow, token, operator, feeRecipient);

        bytes4[] memory selectors = new bytes4[](11);
        selectors[0] = EscrowHandler.depositEth.selector;
        selectors[1] = EscrowHandler.depositToken.selector;
        selectors[2] = EscrowHandler.capture.selector;
        selectors[3] = EscrowHandler.voidPayment.selector;
        selectors[4] = EscrowHandler.reclaim.selector;
        selectors[5] = EscrowHandler.refund.selector;
        selectors[6] = EscrowHandler.fund.selector;
        selectors[7] = EscrowHandler.withdraw.selector;
        selectors[8] = EscrowHandler.settle.selector;
        selectors[9] = EscrowHandler.warp.selector;
        // Deposits twice as likely, so that there is something to capture/void/reclaim.
        selectors[10] = EscrowHandler.depositEth.selector;
        targetSelector(FuzzSelector({addr: address(handler), selectors: selectors}));
        targetContract(address(handler));
    }

    function _balance(uint256 a) internal view returns (uint256) {
        return a == 0 ? address(escrow).balance : token.balanceOf(address(escrow));
    }

    /// What the escrow owes in asset `a`: open payments' uncaptured remainders plus liquidity.
    function _owed(uint256 a) internal view returns (uint256 owed) {
        address asset = handler.assetOf(a);
        uint256 n = handler.idCount();
        for (uint256 i; i < n; i++) {
            (,, address t, uint256 amount,, uint256 c,, bool closed) = escrow.payments(handler.ids(i));
            if (t == asset && !closed) owed += amount - c;
        }
        owed += escrow.liquidity(asset);
    }

    /// Solvency and ghost accounting, for ETH and for the token.
    function invariant_balanceCoversOwedAndGhostsMatch() public view {
        for (uint256 a; a < 2; a++) {
            uint256 bal = _balance(a);
            uint256 owed = _owed(a);
            assertGe(bal, owed, "escrow balance covers open remainders + liquidity");
            // Nobody can push ETH/tokens in outside the API here, so it is exact.
            assertEq(bal, owed, "no unaccounted balance");
            assertEq(
                bal,
                handler.deposited(a) - handler.captured(a) - handler.voided(a) - handler.reclaimed(a)
                    + handler.funded(a) - handler.withdrawn(a) - handler.settled(a),
                "balance = ghost inflows - ghost outflows"
            );
            assertEq(
                escrow.liquidity(handler.assetOf(a)),
                handler.funded(a) - handler.withdrawn(a) - handler.settled(a),
                "liquidity = funded - withdrawn - settled"
            );
        }
    }

    /// Per-payment bounds, and what merchants and the fee recipient were paid.
    function invariant_paymentsAndPayoutsMatchGhosts() public view {
        uint256[2] memory sumCaptured;
        uint256[2] memory sumRefunded;
        uint256 n = handler.idCount();
        for (uint256 i; i < n; i++) {
            (,, address t, uint256 amount,, uint256 c, uint256 r, bool closed) = escrow.payments(handler.ids(i));
            assertLe(c, amount, "captured <= amount");
            assertLe(r, c, "refunded <= captured");
            if (c == amount) assertTrue(closed, "fully captured is closed");
            uint256 a = t == address(0) ? 0 : 1;
            sumCaptured[a] += c;
            sumRefunded[a] += r;
        }
        address[2] memory merchants = handler.allMerchants();
        for (uint256 a; a < 2; a++) {
            assertEq(sumCaptured[a], handler.captured(a));
            assertEq(sumRefunded[a], handler.refunded(a));
            uint256 paidToMerchants;
            for (uint256 m; m < 2; m++) {
                paidToMerchants += a == 0 ? merchants[m].balance : token.balanceOf(merchants[m]);
            }
            assertEq(paidToMerchants, handler.captured(a) - handler.fees(a) + handler.settled(a));
            assertEq(a == 0 ? feeRecipient.balance : token.balanceOf(feeRecipient), handler.fees(a));
        }
    }

    /// After every run: the operator voids what is open and withdraws all liquidity; nothing may
    /// be left stuck in the escrow.
    function afterInvariant() external {
        uint256 n = handler.idCount();
        vm.startPrank(operator);
        for (uint256 i; i < n; i++) {
            bytes32 id = handler.ids(i);
            (,,,,,,, bool closed) = escrow.payments(id);
            if (!closed) escrow.void(id);
        }
        for (uint256 a; a < 2; a++) {
            address asset = handler.assetOf(a);
            uint256 l = escrow.liquidity(asset);
            if (l > 0) escrow.withdraw(asset, l, operator);
        }
        vm.stopPrank();
        assertEq(address(escrow).balance, 0, "no ETH stuck");
        assertEq(token.balanceOf(address(escrow)), 0, "no tokens stuck");
    }
}
