import httpx

from imagegen import photo_like


async def test_predict_returns_three_predictions(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/predict", files={"file": ("a.jpg", photo_like(), "image/jpeg")})
    assert response.status_code == 200
    assert len(response.json()["predictions"]) == 3
