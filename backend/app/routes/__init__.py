"""The HTTP routes, one module per area, gathered into one router."""

from fastapi import APIRouter

from app.routes import anomaly_routes, auth_routes, health_routes, metrics_routes, model_routes, web_routes

api_router = APIRouter()
api_router.include_router(health_routes.router)
api_router.include_router(metrics_routes.router)
api_router.include_router(auth_routes.router)
api_router.include_router(anomaly_routes.router)
api_router.include_router(model_routes.router)
api_router.include_router(web_routes.router)
