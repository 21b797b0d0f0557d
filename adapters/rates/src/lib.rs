//! Live exchange rates for the relay, from public exchange APIs.
//!
//! - [`providers`]: each API in its own documented format (Coinbase's exchange rates, Kraken's
//!   ticker, CoinGecko's simple price): the requests for the wanted pairs and the parsing of an
//!   answer into prices. Garbage (HTML, the wrong shape, zero, negative or absurd prices) is
//!   refused or dropped, never used.
//! - [`book`]: each provider's latest price of each pair; the rate is the median of the fresh ones
//!   with outliers (over 5 % from the median) left out, carrying its sources and the time of its
//!   oldest price; a pair nobody quotes is inverted or crossed through USD, rounded to 16
//!   significant digits.
//! - [`live`]: [`LiveRates`], refreshed in the background, the relay's `RateSource`; the fixed
//!   table of the configuration overrides it pair by pair.

pub mod book;
pub mod live;
pub mod providers;

pub use book::{Book, Unavailable};
pub use live::{refresh_loop, Health, LiveRates, Settings};
pub use providers::{Provider, ProviderError, Quoted};
