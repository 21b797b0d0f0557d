//! Payment links.
//!
//! - `payment_links`: link id → the link.
//! - `link_tokens`: the public token → link id.
//! - `links_by_merchant`: merchant id · link id → (), for listing (ids sort by creation time).

use super::{abort, id_key, idem_key, merchant_prefix, Abort, SledStore};
use crate::codec::{decode, encode};
use relay_core::{LinkId, MerchantId, PaymentLink};
use relay_store::{Commit, IdempotencyWrite, Page, PaymentLinks, StoreError};
use sled::Transactional;

impl PaymentLinks for SledStore {
    async fn create_link(
        &self,
        link: &PaymentLink,
        idempotency: Option<IdempotencyWrite<'_>>,
    ) -> Result<Commit, StoreError> {
        let i = &self.inner;
        let id = link.id.as_str().as_bytes();
        let value = encode(link);
        let by_merchant = id_key(&merchant_prefix(&link.merchant_id), link.id.as_str());
        let idem = idempotency
            .as_ref()
            .map(|w| (idem_key(w.merchant_id, w.key), &w.record));
        let _gate = self.write_gate();
        let result = (
            &i.payment_links,
            &i.link_tokens,
            &i.links_by_merchant,
            &i.idempotency,
        )
            .transaction(|(links, tokens, by_m, idem_tx)| {
                if let Some((key, record)) = &idem {
                    Self::claim(idem_tx, key, record)?;
                }
                if tokens.insert(link.token.as_bytes(), id)?.is_some()
                    || links.insert(id, value.as_slice())?.is_some()
                {
                    return Err(abort(Abort::Conflict));
                }
                by_m.insert(by_merchant.as_slice(), &[])?;
                Ok(())
            });
        self.finish(result)
    }

    async fn link(&self, id: &LinkId) -> Result<Option<PaymentLink>, StoreError> {
        self.inner
            .payment_links
            .get(id.as_str().as_bytes())?
            .map(|v| decode("payment link", &v))
            .transpose()
    }

    async fn link_by_token(&self, token: &str) -> Result<Option<PaymentLink>, StoreError> {
        let Some(id) = self.inner.link_tokens.get(token.as_bytes())? else {
            return Ok(None);
        };
        self.inner
            .payment_links
            .get(id)?
            .map(|v| decode("payment link", &v))
            .transpose()
    }

    async fn update_link(
        &self,
        expected_version: u64,
        link: &PaymentLink,
    ) -> Result<Commit, StoreError> {
        let id = link.id.as_str().as_bytes();
        let value = encode(link);
        let _gate = self.write_gate();
        let result = self.inner.payment_links.transaction(|links| {
            let Some(current) = links.get(id)? else {
                return Err(abort(Abort::Conflict));
            };
            let current: PaymentLink =
                decode("payment link", &current).map_err(|e| abort(Abort::Decode(e)))?;
            if current.version != expected_version || current.token != link.token {
                return Err(abort(Abort::Conflict));
            }
            links.insert(id, value.as_slice())?;
            Ok(())
        });
        self.finish(result)
    }

    async fn list_links(
        &self,
        merchant: &MerchantId,
        starting_after: Option<&LinkId>,
        limit: usize,
    ) -> Result<Page<PaymentLink>, StoreError> {
        let i = &self.inner;
        Self::page_by_index(
            &i.links_by_merchant,
            &merchant_prefix(merchant),
            starting_after.map(LinkId::as_str),
            limit,
            |id| {
                i.payment_links
                    .get(id)?
                    .map(|v| decode("payment link", &v))
                    .transpose()
            },
        )
    }
}
