import Contracts
import EventBus
import RedisKit

/// Every fix matching accepts, published in batches to `driver.location` (every
/// `matching.location.publish.ms`, 250 by default) so that analytics can rebuild each trip's path. Each
/// fix carries the driver's state as matching saw it then, which is what supply per cell is counted from.
typealias FixStream = StreamBatcher<LocationEvents.Fix, LocationEvents.Fixes>

extension FixStream {
    static func fixes(redis: RedisClient, source: String, maxLength: Int) -> FixStream {
        FixStream(redis: redis, source: source, batchSize: 1000, maxLength: maxLength) { LocationEvents.Fixes(fixes: $0) }
    }
}
