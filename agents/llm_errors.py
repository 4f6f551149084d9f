"""What a failed LLM call raises: an ``LLMError`` whose ``retryable`` flag says whether trying again
later can help (agents.retry decides when). The kinds (codes) are agents.llm's taxonomy of provider
errors."""

from __future__ import annotations

from typing import Any


class LLMError(Exception):
    """A failed LLM call. ``code`` is a short slug; ``retryable`` says whether a later retry may help."""

    retryable: bool = False

    def __init__(
        self,
        code: str,
        message: str,
        *,
        retry_after: float | None = None,
        attempts: int = 0,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.retry_after = retry_after
        self.attempts = attempts
        self.prompt_tokens = prompt_tokens
        self.completion_tokens = completion_tokens

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only arguments defeat Exception's default pickling; job queues pickle failures.
        state = (
            self.code,
            self.message,
            self.retry_after,
            self.attempts,
            self.prompt_tokens,
            self.completion_tokens,
        )
        return (_rebuild_error, (type(self), *state))


class RetryableLLMError(LLMError):
    retryable = True


class PermanentLLMError(LLMError):
    retryable = False


def _rebuild_error(
    cls: type[LLMError],
    code: str,
    message: str,
    retry_after: float | None,
    attempts: int,
    prompt_tokens: int,
    completion_tokens: int,
) -> LLMError:
    return cls(
        code,
        message,
        retry_after=retry_after,
        attempts=attempts,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
    )
