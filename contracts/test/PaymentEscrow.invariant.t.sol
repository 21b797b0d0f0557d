// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {Test} from "forge-std/Test.sol";
import {CommonBase} from "forge-std/Base.sol";
import {StdCheats} from "forge-std/StdCheats.sol";
import {StdUtils} from "forge-std/StdUtils.sol";
import {PaymentEscrow} from "../src/PaymentEscrow.sol";
import {TestToken} from "../src/TestToken.sol";

/// Drives the escrow with random but valid operations (invariant runs use fail_on_revert, so
/// every call the handler makes must succeed) and keeps ghost totals per asset and per merchant.
contract EscrowHandler is CommonBase, StdCheats, StdUtils {
    PaymentEscrow public immutable escrow;
    TestToken public immutable token;
    address public immutable operator;
    address public immutable feeRecipient;
    address public immutable treasury;
    /// A third party that backs merchants' refund reserves.
    address public immutable backer;

    address[3] internal payers;
    address[2] internal merchants;
    address internal constant ETH = address(0);
    /// The operator's own wallet, which only `fund` may spend (and only what it is topped up with).
    uint256 public constant OPERATOR_ETH = 1_000 ether;
    uint256 public constant OPERATOR_TOKENS = 1e15;

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
    uint256[2] public reserveFunded;
    uint256[2] public reserveWithdrawn;
    // Per merchant index and asset index.
    uint256[2][2] public merchantReserveFunded;
    uint256[2][2] public merchantReserveWithdrawn;
    uint256[2][2] public merchantRefunded;

    /// Set if any refund call left the operator with less ETH or fewer tokens than before it.
    bool public refundCostOperator;
    uint256 public refundCalls;

    constructor(PaymentEscrow escrow_, TestToken token_, address operator_, address feeRecipient_, address treasury_) {
        escrow = escrow_;
        token = token_;
        operator = operator_;
        feeRecipient = feeRecipient_;
        treasury = treasury_;
        backer = makeAddr("backer");
        payers = [makeAddr("payer0"), makeAddr("payer1"), makeAddr("payer2")];
        merchants = [makeAddr("merchant0"), makeAddr("merchant1")];
        for (uint256 i; i < payers.length; i++) {
            vm.prank(payers[i]);
            token.approve(address(escrow), type(uint256).max);
        }
        for (uint256 i; i < merchants.length; i++) {
            vm.prank(merchants[i]);
            token.approve(address(escrow), type(uint256).max);
        }
        vm.prank(backer);
        token.approve(address(escrow), type(uint256).max);
        // The operator holds money of its own and has approved the escrow for all of it: a refund
        // that pulled from it would succeed and be caught by the invariants.
        vm.deal(operator, OPERATOR_ETH);
        token.mint(operator, OPERATOR_TOKENS);
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

    /// What the ghosts say merchant `m`'s reserve of asset `a` is.
    function expectedReserve(uint256 m, uint256 a) external view returns (uint256) {
        return merchantReserveFunded[m][a] - merchantReserveWithdrawn[m][a] - merchantRefunded[m][a];
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
        uint256 fee = amount * _bound(feeBps, 0, escrow.maxFeeBps()) / 10_000;
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

    /// Refund from the merchant's reserve, at most what it holds and what is left to refund.
    function refund(uint256 idSeed, uint256 amount) external {
        (bool found, bytes32 id) = _pick(idSeed, _refundable);
        if (!found) return;
        (, address merchant, address asset,,, uint256 alreadyCaptured, uint256 alreadyRefunded,) = escrow.payments(id);
        uint256 limit = alreadyCaptured - alreadyRefunded;
        uint256 reserve = escrow.refundReserve(merchant, asset);
        if (reserve < limit) limit = reserve;
        amount = _bound(amount, 1, limit);
        uint256 operatorEth = operator.balance;
        uint256 operatorTokens = token.balanceOf(operator);
        vm.prank(operator);
        escrow.refund(id, amount);
        if (operator.balance < operatorEth || token.balanceOf(operator) < operatorTokens) refundCostOperator = true;
        refundCalls++;
        uint256 a = _index(asset);
        refunded[a] += amount;
        merchantRefunded[_merchantIndex(merchant)][a] += amount;
    }

    /// The merchant itself or a backer adds to a merchant's reserve, with fresh funds.
    function fundRefunds(uint256 funderSeed, uint256 merchantSeed, uint256 assetSeed, uint256 amount) external {
        uint256 m = merchantSeed % merchants.length;
        uint256 a = assetSeed % 2;
        address merchant = merchants[m];
        address from = funderSeed % 2 == 0 ? merchant : backer;
        amount = _bound(amount, 1, a == 0 ? 100 ether : 1e12);
        vm.startPrank(from);
        if (a == 0) {
            vm.deal(from, from.balance + amount);
            escrow.fundRefunds{value: amount}(merchant, ETH, amount);
        } else {
            token.mint(from, amount);
            escrow.fundRefunds(merchant, address(token), amount);
        }
        vm.stopPrank();
        reserveFunded[a] += amount;
        merchantReserveFunded[m][a] += amount;
    }

    function withdrawRefunds(uint256 merchantSeed, uint256 assetSeed, uint256 amount) external {
        uint256 m = merchantSeed % merchants.length;
        uint256 a = assetSeed % 2;
        uint256 available = escrow.refundReserve(merchants[m], assetOf(a));
        if (available == 0) return;
        amount = _bound(amount, 1, available);
        vm.prank(merchants[m]);
        escrow.withdrawRefunds(assetOf(a), amount);
        reserveWithdrawn[a] += amount;
        merchantReserveWithdrawn[m][a] += amount;
    }

    function fund(uint256 assetSeed, uint256 amount) external {
        uint256 a = assetSeed % 2;
        amount = _bound(amount, 1, a == 0 ? 100 ether : 1e12);
        vm.startPrank(operator);
        if (a == 0) {
            vm.deal(operator, operator.balance + amount);
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
        escrow.withdraw(assetOf(a), amount);
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

    function _merchantIndex(address merchant) internal view returns (uint256) {
        return merchant == merchants[0] ? 0 : 1;
    }

    function _open(bytes32 id) internal view returns (bool) {
        (,,,,,,, bool closed) = escrow.payments(id);
        return !closed;
    }

    function _capturable(bytes32 id) internal view returns (bool) {
        (,,,, uint64 exp,,, bool closed) = escrow.payments(id);
        return !closed && block.timestamp < exp;
    }

    /// Something left to refund, and something in the merchant's reserve to refund it from.
    function _refundable(bytes32 id) internal view returns (bool) {
        (, address merchant, address asset,,, uint256 c, uint256 r,) = escrow.payments(id);
        return c > r && escrow.refundReserve(merchant, asset) > 0;
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
    address internal treasury = makeAddr("treasury");

    function setUp() public {
        vm.warp(1_700_000_000);
        escrow = new PaymentEscrow(makeAddr("owner"), operator, feeRecipient, treasury, 1_000, 2 days);
        token = new TestToken("Test USD", "TUSD", 6);
        handler = new EscrowHandler(escrow, token, operator, feeRecipient, treasury);

        bytes4[] memory selectors = new bytes4[](15);
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
        selectors[10] = EscrowHandler.fundRefunds.selector;
        selectors[11] = EscrowHandler.withdrawRefunds.selector;
        // Deposits twice as likely, so that there is something to capture/void/reclaim; refunds
        // twice as likely, so that reserves are actually spent.
        selectors[12] = EscrowHandler.depositEth.selector;
        selectors[13] = EscrowHandler.depositToken.selector;
        selectors[14] = EscrowHandler.refund.selector;
        targetSelector(FuzzSelector({addr: address(handler), selectors: selectors}));
        targetContract(address(handler));
    }

    function _balance(uint256 a) internal view returns (uint256) {
        return a == 0 ? address(escrow).balance : token.balanceOf(address(escrow));
    }

    function _balanceOf(uint256 a, address who) internal view returns (uint256) {
        return a == 0 ? who.balance : token.balanceOf(who);
    }

    /// The sum of all merchants' refund reserves of asset `a`.
    function _reserves(uint256 a) internal view returns (uint256 sum) {
        address[2] memory merchants = handler.allMerchants();
        for (uint256 m; m < 2; m++) {
            sum += escrow.refundReserve(merchants[m], handler.assetOf(a));
        }
    }

    /// What the escrow owes in asset `a`: open payments' uncaptured remainders plus liquidity plus
    /// merchants' refund reserves.
    function _owed(uint256 a) internal view returns (uint256 owed) {
        address asset = handler.assetOf(a);
        uint256 n = handler.idCount();
        for (uint256 i; i < n; i++) {
            (,, address t, uint256 amount,, uint256 c,, bool closed) = escrow.payments(handler.ids(i));
            if (t == asset && !closed) owed += amount - c;
        }
        owed += escrow.liquidity(asset);
        owed += _reserves(a);
    }

    /// Solvency and ghost accounting, for ETH and for the token.
    function invariant_balanceCoversOwedAndGhostsMatch() public view {
        for (uint256 a; a < 2; a++) {
            uint256 bal = _balance(a);
            uint256 owed = _owed(a);
            assertGe(bal, owed, "escrow balance covers open remainders + liquidity + reserves");
            // Nobody can push ETH/tokens in outside the API here, so it is exact.
            assertEq(bal, owed, "no unaccounted balance");
            assertEq(
                bal,
                handler.deposited(a) - handler.captured(a) - handler.voided(a) - handler.reclaimed(a)
                    + handler.funded(a) - handler.withdrawn(a) - handler.settled(a) + handler.reserveFunded(a)
                    - handler.reserveWithdrawn(a) - handler.refunded(a),
                "balance = ghost inflows - ghost outflows"
            );
            assertEq(
                escrow.liquidity(handler.assetOf(a)),
                handler.funded(a) - handler.withdrawn(a) - handler.settled(a),
                "liquidity = funded - withdrawn - settled"
            );
        }
    }

    /// Each merchant's reserve is exactly what was put in for it, minus what it withdrew, minus the
    /// refunds of its own payments: refunds never draw on another merchant's reserve.
    function invariant_reservesPerMerchantMatchGhosts() public view {
        address[2] memory merchants = handler.allMerchants();
        for (uint256 m; m < 2; m++) {
            for (uint256 a; a < 2; a++) {
                assertEq(
                    escrow.refundReserve(merchants[m], handler.assetOf(a)),
                    handler.expectedReserve(m, a),
                    "reserve = funded - withdrawn - refunded, per merchant"
                );
            }
        }
    }

    /// The operator's own wallet never pays for a refund: no refund call lowered its balance, and
    /// its balance is what it started with (fund spends exactly the top-up it is given).
    function invariant_operatorNeverPaysRefunds() public view {
        assertFalse(handler.refundCostOperator(), "a refund took the operator's own funds");
        assertEq(operator.balance, handler.OPERATOR_ETH(), "operator ETH");
        assertEq(token.balanceOf(operator), handler.OPERATOR_TOKENS(), "operator tokens");
    }

    /// Per-payment bounds, and what merchants, the fee recipient and the treasury were paid.
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
            assertLe(handler.fees(a) * 10_000, handler.captured(a) * escrow.maxFeeBps(), "fees within the cap");
            uint256 paidToMerchants;
            for (uint256 m; m < 2; m++) {
                paidToMerchants += _balanceOf(a, merchants[m]);
            }
            // Merchants fund their own reserves with fresh money, so they hold what they were paid
            // plus what they took back from their reserves.
            assertEq(
                paidToMerchants,
                handler.captured(a) - handler.fees(a) + handler.settled(a) + handler.reserveWithdrawn(a)
            );
            assertEq(_balanceOf(a, feeRecipient), handler.fees(a));
            assertEq(_balanceOf(a, treasury), handler.withdrawn(a), "withdrawals go to the treasury only");
        }
    }

    /// After every run: the operator voids what is open and withdraws all liquidity, merchants
    /// withdraw their reserves; nothing may be left stuck in the escrow.
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
            if (l > 0) escrow.withdraw(asset, l);
        }
        vm.stopPrank();
        address[2] memory merchants = handler.allMerchants();
        for (uint256 m; m < 2; m++) {
            for (uint256 a; a < 2; a++) {
                address asset = handler.assetOf(a);
                uint256 r = escrow.refundReserve(merchants[m], asset);
                if (r == 0) continue;
                vm.prank(merchants[m]);
                escrow.withdrawRefunds(asset, r);
            }
        }
        assertEq(address(escrow).balance, 0, "no ETH stuck");
        assertEq(token.balanceOf(address(escrow)), 0, "no tokens stuck");
    }
}
