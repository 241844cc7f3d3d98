import Contracts
import EventBus
import RedisKit

/// The quotes this instance gave, published to `order.quotes` every `order.quotes.publish.ms`: analytics
/// counts quotes and their conversion into orders from it.
typealias QuoteTally = StreamBatcher<QuoteEvents.Quote, QuoteEvents.Given>

extension QuoteTally {
    static func quotes(redis: RedisClient, source: String) -> QuoteTally {
        QuoteTally(redis: redis, source: source, batchSize: 2000) { QuoteEvents.Given(quotes: $0) }
    }
}
