//! InitProducerId for idempotent producers: a fresh producer id at epoch 0 every time, as
//! Kafka does for producers without a transactional id. Transactional ids are refused until
//! transactions exist.

use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};
use kafka_protocol::ResponseError;

use crate::errors::error_code;
use crate::BrokerState;

pub(crate) fn handle(state: &BrokerState, req: InitProducerIdRequest) -> InitProducerIdResponse {
    let response = InitProducerIdResponse::default()
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    if req.transactional_id.is_some() {
        return response.with_error_code(ResponseError::TransactionalIdAuthorizationFailed.code());
    }
    match tokio::task::block_in_place(|| state.logs.allocate_producer_id()) {
        Ok(id) => response
            .with_producer_id(ProducerId(id))
            .with_producer_epoch(0),
        Err(e) => response.with_error_code(error_code(&e)),
    }
}
