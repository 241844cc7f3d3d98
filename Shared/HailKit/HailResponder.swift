import Contracts
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import NIOPosix
import RedisKit
import W3CTraceContext

/// The outermost layer of every Hailstorm service, around its router.
///
/// - gives the request an id (the caller's `X-Request-ID` or a new one) and a W3C trace span, puts both
///   in the request's logger and echoes the id;
/// - refuses bodies over the limit (413) and bounds streamed ones;
/// - applies the caller's deadline (`X-Hailstorm-Deadline-Ms`, else `http.timeout.ms`): when it passes,
///   the request's task is cancelled and its connection closed (see `respondWithinDeadline`); a handler
///   that notices its deadline passed answers a 504 problem;
/// - renders every error as `application/problem+json`.
public struct HailResponder<Inner: HTTPResponder>: HTTPResponder where Inner.Context == HailRequestContext {
    public typealias Context = HailRequestContext

    let inner: Inner
    let bodyLimit: Int
    let defaultTimeout: Duration?
    /// Where the answers to sampled requests are written (nil: nowhere).
    let traceLines: TraceLines?

    public init(inner: Inner, bodyLimit: Int, defaultTimeout: Duration?, traceLines: TraceLines? = nil) {
        self.inner = inner
        self.bodyLimit = bodyLimit
        self.defaultTimeout = defaultTimeout
        self.traceLines = traceLines
    }

    public func respond(to request: Request, context: Context) async throws -> Response {
        var context = context
        context.requestID = HailRequestContext.requestID(of: request.headers)
        if let trace = HailRequestContext.trace(of: request.headers) { context.trace = trace }
        // Only a sampled request's times are taken. Past the instance's budget of sampled requests a
        // second, the flag is dropped here (and in every call this request makes), so a caller sampling
        // everything cannot make every service write a line per request.
        var sampled = false
        if let traceLines, context.trace.flags.contains(.sampled) {
            sampled = traceLines.admit()
            if !sampled {
                let trace = context.trace
                context.trace = TraceContext(
                    traceID: trace.traceID, spanID: trace.spanID, flags: TraceFlags(rawValue: trace.flags.rawValue & ~1), state: trace.state)
            }
        }
        let started = sampled ? ContinuousClock.now : nil
        let receivedAt = sampled ? Date().timeIntervalSince1970 : 0
        context.logger[metadataKey: "request_id"] = .string(context.requestID)
        context.logger[metadataKey: "trace_id"] = .string(context.trace.traceID.description)
        context.maxUploadSize = bodyLimit

        var response: Response
        do {
            response = try await respondWithinDeadline(to: request, context: &context)
            // The router answers a path it has no route for with a bare 404 (and a few others with bare
            // statuses): every refusal is a problem document here.
            if response.status.code >= 400, response.headers[.contentType] == nil {
                throw HTTPError(response.status)
            }
        } catch {
            let problem = Self.problem(for: error, request: request, context: context)
            if problem.status.code >= 500 {
                context.logger.error(
                    "request failed",
                    metadata: ["error": "\(error)", "path": "\(request.uri.path)", "status": "\(problem.status.code)"])
            } else {
                context.logger.debug("request refused", metadata: ["problem": "\(problem)"])
            }
            response = problem.makeResponse(requestID: context.requestID, allocator: ByteBufferAllocator())
        }
        response.headers[HailHeaders.requestID] = context.requestID
        // A request its caller sampled (`traceparent` flags 01) leaves a line in this service's log and in
        // the trace lines every service shares; the others leave nothing.
        if let started, let traceLines {
            let milliseconds = Double((ContinuousClock.now - started).nanosecondsValue) / 1_000_000
            let line = TraceLine(
                at: receivedAt, service: traceLines.service, instance: traceLines.instance, traceID: context.trace.traceID.description,
                requestID: context.requestID, method: request.method.rawValue, path: request.uri.path, status: Int(response.status.code),
                milliseconds: milliseconds)
            context.logger.info(
                "request answered",
                metadata: ["method": "\(line.method)", "path": "\(line.path)", "status": "\(line.status)", "ms": "\(milliseconds)"])
            traceLines.record(line, logger: context.logger)
        }
        return response
    }

    private func respondWithinDeadline(to request: Request, context: inout Context) async throws -> Response {
        if let length = request.headers[.contentLength].flatMap(Int.init), length > bodyLimit {
            throw Problem.payloadTooLarge(limit: bodyLimit)
        }
        if let header = request.headers[HailHeaders.deadline] {
            guard let milliseconds = Int(header), milliseconds >= 0 else {
                throw Problem.invalidField(HailHeaders.deadline.rawName, "must be a whole number of milliseconds")
            }
            // A caller may shorten the time this service gives a request, never lengthen it.
            context.deadline = .now + min(.milliseconds(milliseconds), defaultTimeout ?? Self.longestDeadline)
        } else if let defaultTimeout {
            context.deadline = .now + defaultTimeout
        }
        guard let deadline = context.deadline else {
            return try await inner.respond(to: request, context: context)
        }
        if deadline <= .now {
            throw Problem.deadlineExceeded("The deadline passed before the request arrived")
        }
        // The handler runs in the task answering the request (the connection's), watched: when the
        // deadline passes first, the process's deadline watch cancels that task (its one timer is set for
        // the earliest deadline watched), the
        // handler stops at its next suspension point, and the connection closes instead of answering,
        // since a cancelled task writes nothing. The caller whose deadline it was has given up by then
        // and answered with a 504 of its own (a service client closes a connection whose call missed
        // its deadline). A child task per request, cancelled alone, kept the connection but cost a tenth
        // of a claim's CPU in the coupon service: two more trips through the global executor.
        let remaining = max(0, (deadline - .now).nanosecondsValue)
        let watch = withUnsafeCurrentTask { task in
            task.map { DeadlineWatch.shared.watch(until: .now() + .nanoseconds(remaining), task: $0) }
        }
        defer { if let watch { DeadlineWatch.shared.unwatch(watch) } }
        do {
            return try await inner.respond(to: request, context: context)
        } catch {
            guard deadline <= .now else { throw error }
            context.logger.warning("deadline exceeded; work cancelled", metadata: ["path": "\(request.uri.path)"])
            throw Problem.deadlineExceeded("The request did not finish within its deadline")
        }
    }

    /// The longest deadline a caller can ask for when the service sets no timeout of its own.
    static var longestDeadline: Duration { .seconds(3600) }

    static func problem(for error: any Error, request: Request, context: Context) -> Problem {
        switch error {
        case let problem as Problem:
            return problem
        case let error as HTTPError:
            switch error.status {
            case .notFound:
                return .notFound("No route for \(request.method) \(request.uri.path)")
            case .contentTooLarge:
                return .payloadTooLarge(limit: context.maxUploadSize)
            case .methodNotAllowed:
                return Problem(
                    .methodNotAllowed, slug: "method-not-allowed", title: "Method not allowed",
                    detail: "\(request.method) is not allowed on \(request.uri.path)")
            default:
                return Problem(
                    error.status, slug: "http-\(error.status.code)", title: error.status.reasonPhrase,
                    detail: error.body)
            }
        case let error as any HTTPResponseError:
            return Problem(error.status, slug: "http-\(error.status.code)", title: error.status.reasonPhrase)
        case let error as DecodingError:
            return JSONBody.problem(for: error)
        case let error as RedisError where error.commandNotSent:
            // Nothing reached Redis, so nothing happened: the caller may simply try again. (A name lookup
            // that stalls while a container network settles looks like this too.)
            return .unavailable("Redis cannot be reached at the moment; nothing was done", retryAfterSeconds: 1)
        case let error as RedisError where error.isTimeout:
            // Redis stopped answering; whether the command ran is unknown, and retried writes are idempotent.
            return .unavailable("Redis did not answer in time", retryAfterSeconds: 1)
        case let error as RedisError where error.isConnectionError:
            // The connection closed under the command (a Redis restarted, a cluster master failed over):
            // it may have run, and a write repeated with the same Idempotency-Key is safe.
            return .unavailable(
                "Redis closed the connection before it answered; repeat the request (with the same Idempotency-Key)",
                retryAfterSeconds: 1)
        case let error as RedisError where ["CLUSTERDOWN", "TRYAGAIN", "MASTERDOWN", "LOADING"].contains(error.serverErrorPrefix ?? ""):
            return .unavailable("Redis is failing over or loading its data: \(error.message)", retryAfterSeconds: 1)
        case is CancellationError:
            if let deadline = context.deadline, deadline <= .now {
                return .deadlineExceeded("The caller's deadline passed")
            }
            return .unavailable("The request was cancelled while the service shut down")
        default:
            return .internalError
        }
    }
}
