from aloe.models import SamplingParams, load_model


def test_tiny_model_generates_a_batch(tiny_model_dir):
    model = load_model(f"hf:{tiny_model_dir}")
    conversations = [[{"role": "user", "content": "hello"}], [{"role": "user", "content": "a longer message here"}]]
    replies = model.generate(conversations, SamplingParams(max_new_tokens=5, temperature=0))
    assert len(replies) == 2
    assert all(reply.completion_tokens <= 5 for reply in replies)
