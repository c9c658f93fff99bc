"""A client for OpenAI-compatible chat-completions endpoints (vLLM, hosted APIs).

Both the template writer (an instruction LLM) and the captioner (a vision LLM)
talk to their model through :class:`ChatClient`. Transient failures (429, 5xx,
timeouts, dropped connections, answers without ``choices[0].message.content``)
are retried with exponential backoff; any other 4xx fails at once. The API key
is read from an environment variable and never appears in a log record, an
exception message or ``repr``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Coroutine, Optional, Sequence, TypeVar

import httpx

from gadms.credentials import replace_credentials

log = logging.getLogger(__name__)

T = TypeVar("T")

# 408 and 425 are "try again later" codes too; every other 4xx means the request itself is wrong.
RETRYABLE_STATUS = frozenset({408, 425, 429})
EXCERPT_CHARS = 200


class ChatError(RuntimeError):
    """A chat call failed for good; the message is one line naming the endpoint."""


class _Retryable(Exception):
    """One attempt failed in a way worth retrying."""

    def __init__(self, reason: str, retry_after: Optional[float] = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


@dataclass(frozen=True)
class ChatCall:
    """The arguments of one chat completion, for :meth:`ChatClient.complete_many`.

    Attributes:
        messages: OpenAI-style chat messages.
        max_tokens: the most tokens the model may write.
        temperature: sampling temperature (0 = greedy).
        seed: the sampling seed sent to the server, if any.
    """

    messages: list[dict[str, Any]]
    max_tokens: int = 256
    temperature: float = 0.0
    seed: Optional[int] = None


class ChatClient:
    """Calls ``{base_url}/chat/completions`` with retries and exponential backoff.

    Use it as a context manager (or call :meth:`close`) to release the pooled
    connections of the synchronous path.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str | None = None,
        timeout_s: float = 60.0,
        max_retries: int = 5,
        backoff_s: float = 1.0,
        max_backoff_s: float = 60.0,
        *,
        sleep: Callable[[float], None] = time.sleep,
        async_sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        """Configure the client; no connection is opened yet.

        Args:
            base_url: the API root, e.g. ``http://127.0.0.1:8000/v1``.
            model: the model name sent with every request.
            api_key_env: name of the environment variable holding the API key;
                ``None`` or an unset variable sends no ``Authorization`` header.
            timeout_s: connect/read/write timeout of one attempt, in seconds.
            max_retries: retries after the first attempt (0 = try once).
            backoff_s: delay before the first retry; it doubles on each retry.
            max_backoff_s: cap on any single delay, ``Retry-After`` included.
            sleep: the blocking sleep used between sync retries (tests inject one).
            async_sleep: the sleep awaited between async retries.

        Raises:
            ValueError: the URL is not http(s) or a number is out of range.
        """
        if not base_url.startswith(("http://", "https://")):
            shown = replace_credentials(base_url, lambda _: "[REDACTED]")
            raise ValueError(f"ChatClient base_url {shown!r}: must start with http:// or https://")
        if timeout_s <= 0 or max_retries < 0 or backoff_s < 0 or max_backoff_s < 0:
            shown = replace_credentials(base_url, lambda _: "[REDACTED]")
            raise ValueError(f"ChatClient {shown}: timeout_s must be > 0 and retries/backoffs >= 0")
        self.base_url = base_url.rstrip("/")
        self.url = f"{self.base_url}/chat/completions"
        self.shown_url = replace_credentials(self.url, lambda _: "[REDACTED]")  # for messages and logs
        self.model = model
        self.api_key_env = api_key_env
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self._sleep = sleep
        self._async_sleep = async_sleep
        self._api_key = os.environ.get(api_key_env) if api_key_env else None
        self._http: Optional[httpx.Client] = None
        self._http_lock = threading.Lock()

    def __repr__(self) -> str:
        key_state = "set" if self._api_key else "unset"
        return (
            f"ChatClient(url={self.shown_url!r}, model={self.model!r}, "
            f"api_key_env={self.api_key_env!r} ({key_state}), max_retries={self.max_retries})"
        )

    def __enter__(self) -> "ChatClient":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the pooled connections of the synchronous path (safe to call twice)."""
        with self._http_lock:
            if self._http is not None:
                self._http.close()
                self._http = None

    def complete(
        self,
        messages: list[dict[str, Any]],
        max_tokens: int = 256,
        temperature: float = 0.0,
        seed: int | None = None,
    ) -> str:
        """Send one chat completion and return the model's text, retrying transient failures.

        Args:
            messages: OpenAI-style chat messages.
            max_tokens: the most tokens the model may write.
            temperature: sampling temperature.
            seed: sampling seed for servers that support one.

        Returns:
            ``choices[0].message.content`` of the answer.

        Raises:
            ChatError: a non-retryable 4xx, or every attempt failed.
        """
        payload = self._payload(messages, max_tokens, temperature, seed)
        http = self._sync_http()
        reason = ""
        for attempt in range(self.max_retries + 1):
            try:
                return self._content(self._post_sync(http, payload))
            except _Retryable as failure:
                reason = failure.reason
                if attempt < self.max_retries:
                    self._sleep(self._before_retry(attempt, failure))
        raise self._gave_up(reason)

    async def acomplete(
        self,
        messages: list[dict[str, Any]],
        max_tokens: int = 256,
        temperature: float = 0.0,
        seed: int | None = None,
        *,
        http: httpx.AsyncClient | None = None,
    ) -> str:
        """Async :meth:`complete`: same payload, retries and errors.

        Args:
            messages: OpenAI-style chat messages.
            max_tokens: the most tokens the model may write.
            temperature: sampling temperature.
            seed: sampling seed for servers that support one.
            http: a shared client (see :meth:`async_http`); a private one is
                opened for this call when ``None``.

        Returns:
            ``choices[0].message.content`` of the answer.

        Raises:
            ChatError: a non-retryable 4xx, or every attempt failed.
        """
        if http is None:
            async with self.async_http() as own:
                return await self.acomplete(messages, max_tokens, temperature, seed, http=own)
        payload = self._payload(messages, max_tokens, temperature, seed)
        reason = ""
        for attempt in range(self.max_retries + 1):
            try:
                return self._content(await self._post_async(http, payload))
            except _Retryable as failure:
                reason = failure.reason
                if attempt < self.max_retries:
                    await self._async_sleep(self._before_retry(attempt, failure))
        raise self._gave_up(reason)

    def async_http(self, max_connections: int = 16) -> httpx.AsyncClient:
        """Open an async HTTP client sized for ``max_connections`` concurrent calls.

        Args:
            max_connections: the connection pool size; match it to the concurrency.

        Returns:
            An ``httpx.AsyncClient`` to use as ``async with`` and pass to :meth:`acomplete`.
        """
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        return httpx.AsyncClient(timeout=self._timeout(), limits=limits)

    async def acomplete_many(self, calls: Sequence[ChatCall], concurrency: int = 8) -> list[str | ChatError]:
        """Run many chat calls with at most ``concurrency`` HTTP requests in flight.

        Args:
            calls: the calls to make.
            concurrency: the most calls running at once (retries included).

        Returns:
            One entry per call, in order: the answer text, or the :class:`ChatError` it ended with.
        """
        if concurrency < 1:
            raise ValueError(f"ChatClient {self.shown_url}: concurrency must be >= 1 (got {concurrency})")
        gate = asyncio.Semaphore(concurrency)
        async with self.async_http(concurrency) as http:

            async def one(call: ChatCall) -> str | ChatError:
                async with gate:
                    try:
                        return await self.acomplete(
                            call.messages, call.max_tokens, call.temperature, call.seed, http=http
                        )
                    except ChatError as error:
                        return error

            return list(await asyncio.gather(*(one(call) for call in calls)))

    def complete_many(self, calls: Sequence[ChatCall], concurrency: int = 8) -> list[str | ChatError]:
        """Blocking :meth:`acomplete_many`, usable from sync code (even inside a running event loop).

        Args:
            calls: the calls to make.
            concurrency: the most calls running at once.

        Returns:
            One entry per call, in order: the answer text, or the :class:`ChatError` it ended with.
        """
        return run_blocking(self.acomplete_many(calls, concurrency))

    def _payload(
        self, messages: list[dict[str, Any]], max_tokens: int, temperature: float, seed: Optional[int]
    ) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": temperature,
        }
        if seed is not None:
            payload["seed"] = seed
        return payload

    def _headers(self) -> dict[str, str]:
        if not self._api_key:
            return {}
        return {"Authorization": f"Bearer {self._api_key}"}

    def _timeout(self) -> httpx.Timeout:
        # No pool timeout: callers bound concurrency themselves, so waiting for a connection is not a fault.
        return httpx.Timeout(self.timeout_s, pool=None)

    def _sync_http(self) -> httpx.Client:
        with self._http_lock:
            if self._http is None:
                self._http = httpx.Client(timeout=self._timeout())
            return self._http

    def _post_sync(self, http: httpx.Client, payload: dict[str, Any]) -> httpx.Response:
        try:
            return http.post(self.url, json=payload, headers=self._headers())
        except httpx.TransportError as exc:
            raise self._transport_failure(exc) from None

    async def _post_async(self, http: httpx.AsyncClient, payload: dict[str, Any]) -> httpx.Response:
        try:
            return await http.post(self.url, json=payload, headers=self._headers())
        except httpx.TransportError as exc:
            raise self._transport_failure(exc) from None

    def _transport_failure(self, exc: httpx.TransportError) -> Exception:
        """Timeouts and network faults are retried; a bad scheme or proxy setup is not."""
        detail = self._redact(f"{type(exc).__name__}: {exc}".rstrip(": "))
        if isinstance(exc, (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)):
            return _Retryable(detail)
        return ChatError(f"{self.shown_url}: {detail}")

    def _content(self, response: httpx.Response) -> str:
        """Return the answer text of a response, or raise what its status calls for."""
        status = response.status_code
        if status in RETRYABLE_STATUS or status >= 500:
            raise _Retryable(f"HTTP {status}: {self._excerpt(response)}", _retry_after(response))
        if status >= 400:
            raise ChatError(f"{self.shown_url}: HTTP {status}: {self._excerpt(response)}")
        try:
            content = response.json()["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise _Retryable(f"HTTP {status} without choices[0].message.content: {self._excerpt(response)}") from None
        if not isinstance(content, str):
            raise _Retryable(f"HTTP {status}: message.content is {type(content).__name__}, not text")
        return content

    def _before_retry(self, attempt: int, failure: _Retryable) -> float:
        """Log the failed attempt and return how long to wait before the next one."""
        delay = self.backoff_s * 2**attempt if failure.retry_after is None else failure.retry_after
        delay = min(delay, self.max_backoff_s)
        log.warning(
            "chat %s: attempt %d/%d failed (%s); retrying in %.2f s",
            self.shown_url,
            attempt + 1,
            self.max_retries + 1,
            failure.reason,
            delay,
        )
        return delay

    def _gave_up(self, reason: str) -> ChatError:
        attempts = self.max_retries + 1
        return ChatError(f"{self.shown_url}: gave up after {attempts} attempts; last error: {reason}")

    def _excerpt(self, response: httpx.Response) -> str:
        text = " ".join(response.text.split())
        if len(text) > EXCERPT_CHARS:
            text = text[:EXCERPT_CHARS] + "..."
        return self._redact(text) or "<empty body>"

    def _redact(self, text: str) -> str:
        """Hide the API key should a server or library echo it back."""
        return text.replace(self._api_key, "***") if self._api_key else text


def _retry_after(response: httpx.Response) -> Optional[float]:
    """The ``Retry-After`` header in seconds, or ``None`` when absent or not a number."""
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None  # an HTTP date: fall back to our own backoff
    return max(seconds, 0.0)


def run_blocking(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion from sync code.

    Args:
        coro: the coroutine to run.

    Returns:
        Its result. When this thread already runs an event loop (a notebook, an
        async flow), the coroutine runs on a fresh loop in a helper thread.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()
